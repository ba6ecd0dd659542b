"""Local stand-ins for the outside world, run as their own processes: a payment provider and a
marketplace. Tests and the demo talk to them over real HTTP, exactly as to the real thing."""
