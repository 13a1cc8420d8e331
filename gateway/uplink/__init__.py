"""The uplink: the MQTT link (paho-mqtt), the retained state messages and the outbox pump that
publishes what the store holds, in order, and marks it acknowledged."""
