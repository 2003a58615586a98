"""Model monitoring: drift and data quality of served models against their reference."""
