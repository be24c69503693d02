"""prunus.testing: the property-based conformance kit for plugin authors (needs ``prunus[testing]``)."""
