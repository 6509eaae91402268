"""DL/T 698.45 meters and concentrators: link frames, APDUs, typed data, objects, client."""
