//! The official TypeScript MCP client 2.x (`@modelcontextprotocol/client`)
//! through every mode of the relay, in version negotiation `auto` (issue
//! 13). The matrix, its cells and what each asserts are in
//! tests/common/matrix.rs, shared with the Python client 2.x.

mod common;

use common::matrix::{self, Client};

#[test]
fn through_forward_stdio() {
    matrix::through_forward_stdio(Client::TypeScript);
}

#[test]
fn through_reverse_stdio_both_pools() {
    matrix::through_reverse_stdio_both_pools(Client::TypeScript);
}

#[test]
fn through_forward_url_and_reverse_url() {
    matrix::through_forward_url_and_reverse_url(Client::TypeScript);
}
