"""Delivery of a study's answer: the result stream to the hub behind the outbox, the
confirmation protocol, and the DICOM outbox of CAD SRs."""
