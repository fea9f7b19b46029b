"""Adversarial suite (issue #10): crashes, resource faults, hostile input, many writers, secrets."""
