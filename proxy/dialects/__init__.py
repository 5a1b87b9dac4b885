"""Client wire protocols, each a room of its own."""
