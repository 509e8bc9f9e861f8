//! The official Python MCP client 2.x (`mcp` 2.x `Client`) through every
//! mode of the relay, in version negotiation `auto` (issue 13). The
//! matrix, its cells and what each asserts are in tests/common/matrix.rs,
//! shared with the TypeScript client 2.x.

mod common;

use common::matrix::{self, Client};

#[test]
fn through_forward_stdio() {
    matrix::through_forward_stdio(Client::Python);
}

#[test]
fn through_reverse_stdio_both_pools() {
    matrix::through_reverse_stdio_both_pools(Client::Python);
}

#[test]
fn through_forward_url_and_reverse_url() {
    matrix::through_forward_url_and_reverse_url(Client::Python);
}
