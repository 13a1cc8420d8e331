"""Control: signed operator commands and group load-control rounds, and the one verified relay
actuation both of them use (DL/T 645 and Modbus alike)."""
