"""What the `fed` commands do, as typed functions the command line only parses for and prints.

Each function opens a repository, does one operation and returns a dataclass
saying what happened, so it can be scripted and tested without a terminal.
Nothing here imports click or prints; questions to the user (confirmations)
are callbacks the caller passes in.

- :mod:`.repo`: creating a repository, dataset types, dimension records,
  ingest, verify.
- :mod:`.queries`: the ``query-*`` commands.
- :mod:`.membership`: collections and what they hold: register, chain,
  associate/disassociate, certify/decertify.
- :mod:`.removal`: pruning datasets, removing runs and other collections.
- :mod:`.sync` and :mod:`.sites`: the federation commands (sync, bundles,
  site definitions).
- :mod:`.policy` and :mod:`.federate`: sync policies (list, show, check) and
  running their flows.
- :mod:`.status`: the federation's status (``fed status``) and its web page
  (``fed serve``).
- :mod:`.audit`: auditing a repository's files (``fed audit``) and repairing them
  from other sites (``fed repair``).
"""
