"""Labeling services: label schemas, guidelines, annotation sets with history, tasks with leases,
the multi-tier QA workflow (review, validate, audit), gold items and timelines.

Pure rules live in ``medlabel.annotations`` and ``medlabel.workflow``; this package stores what
they decide. See ``docs/labeling.md``.
"""
