"""Generated Strata contracts: strata.<layer>.v1."""
