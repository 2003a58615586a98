"""Model monitoring: drift against reference profiles, and analysis of A/B experiments."""
