"""Q/GDW 1376.1 (and Q/GDW 376.1-2009): the master station to concentrator/terminal protocol."""
