"""Sync policies (``policies/*.yaml``): flows declared, checked against the sites, and run
by ``fed federate`` in passes (model, loading, checks, scheduling and the state kept
between passes)."""

from federation.policy.checks import check_policies, edges_of
from federation.policy.loader import (
    POLICIES_ENV,
    PolicySet,
    Problem,
    parse_policy,
    policies_dir,
    read_policies,
)
from federation.policy.model import Edge, Flow, FlowRun, Policy, format_interval, parse_interval
from federation.policy.schedule import PassResult, execute, order_edges, plan_pass
from federation.policy.state import FederateState, FlowState, retry_delay, state_lock, state_path

__all__ = ["POLICIES_ENV", "Edge", "FederateState", "Flow", "FlowRun", "FlowState",
           "PassResult", "Policy", "PolicySet", "Problem", "check_policies", "edges_of",
           "execute", "format_interval", "order_edges", "parse_interval", "parse_policy",
           "plan_pass", "policies_dir", "read_policies", "retry_delay", "state_lock",
           "state_path"]
