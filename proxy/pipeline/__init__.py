"""The request pipeline: identify, pack, forward, gate, respond, record; the exchange it builds."""
