"""A prunus plugin whose import fails, as one with a missing dependency would."""

raise ImportError("prunus_broken_plugin needs the module 'a_dependency_that_is_not_installed'")
