"""zis-inventory: a credential inventory for Zendesk Integration Services.

Stores the metadata of ZIS connections, never their secrets, and records what changed.
"""

__version__ = "0.1.0"
