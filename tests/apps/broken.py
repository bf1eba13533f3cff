"""An app module that fails to import: the master must stop, not respawn forever."""

raise ImportError("this app is broken on purpose")
