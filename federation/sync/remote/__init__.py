"""Sites on other machines: the outboxes a site publishes, the local mirrors of remote
registries fed from them, and pushes into a remote inbox with their receipt."""
