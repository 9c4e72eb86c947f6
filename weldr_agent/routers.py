"""Moved to weldr_agent/databases.py (issue #16: `routers` beside `routing` read as one thing).

Kept only until workflows/events.py (another branch's file) imports weldr_agent.databases;
delete it then.
"""

from weldr_agent.databases import SHARED_DB, STATE_DB  # noqa: F401
