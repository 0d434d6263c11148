from cove.entry import entry

entry()
