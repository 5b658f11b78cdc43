"""Proposers invent experiments; see `base.BaseProposer` and `registry.load_proposer`."""
