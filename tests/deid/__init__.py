"""Tests of medlabel.deid (de-identification on ingest)."""
