"""Drops: scheduled releases of SKUs, the waiting room that admits shoppers to them, and the
passes that reservations of a drop's SKUs require."""
