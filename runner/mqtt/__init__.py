"""MQTT side of the room: client, message routing, device registry, feedback tracking."""
