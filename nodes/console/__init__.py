"""The privacy officer's web console, served by the node (docs/console.md).

``pages`` builds the console's pages and actions on the shared web base (protocols/web/) over the
node's own context: the same ledger, approval store and audit log the CLI uses, no second copy.
"""
