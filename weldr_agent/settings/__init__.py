"""Weldr Agent settings: every knob comes from the environment (django-environ).

Development (`NODE_ENV` unset or `development`) has an embedded default for everything, so
`make run` works on a fresh machine; production (`NODE_ENV=production`) requires the variables
the design document marks as required. A bad value stops start-up with `ImproperlyConfigured`
naming the variable.

`weldr_agent.settings` stays the DJANGO_SETTINGS_MODULE; its areas are modules of this package,
read in the order below (a later area may use an earlier one's values, never the reverse), and
every setting is importable from here by its name.
"""

# The order of evaluation: each area may use the values of those above it.
# isort: off
from weldr_agent.settings.core import *  # noqa: F403
from weldr_agent.settings.databases import *  # noqa: F403
from weldr_agent.settings.storage import *  # noqa: F403
from weldr_agent.settings.sandbox import *  # noqa: F403
from weldr_agent.settings.workflows import *  # noqa: F403
from weldr_agent.settings.api import *  # noqa: F403
# isort: on
