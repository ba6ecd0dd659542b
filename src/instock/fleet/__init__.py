"""A local fleet: HAProxy in front of several API processes and workers (issue 22)."""

from pathlib import Path

# The balancer's configuration and the template of the fleet's (fleet/lb.py), in the checkout.
TEMPLATE = Path(__file__).resolve().parents[3] / "deploy" / "lb" / "haproxy.cfg"
