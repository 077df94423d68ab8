"""Dispatch: routing rules, alarm state, grouping and the worker loop per route."""
