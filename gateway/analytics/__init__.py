"""Edge analytics fed by the pipeline's validated records: summation groups, daily line loss per
transformer area, theft and tamper indicators. The numbers come from ``edge_rules`` kernels."""
