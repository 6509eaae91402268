"""DLMS/COSEM (IEC 62056-5-3, -6-2, -46, -47): sans-IO codecs and a Twisted session."""
