"""Modbus (RTU and TCP) and the pulse recorders read over it."""
