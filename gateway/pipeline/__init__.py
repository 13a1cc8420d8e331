"""The pipeline: every poll is validated, graded by VEE and committed in one transaction here.

It is the one writer into the durable outbox and the one place alarms are raised; analytics and
control receive the committed, validated records from it instead of raw bus results.
"""
