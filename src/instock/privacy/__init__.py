"""Privacy: the data keys of data subjects (envelope encryption, crypto-shredding)."""
