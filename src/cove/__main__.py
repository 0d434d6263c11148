from cove.cli import entry

entry()
