// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title NaiveDistributor: the seed papers' push loop (transfer to each payee), bench only.
contract NaiveDistributor {
    constructor() payable {}

    function distribute(address[] calldata payees, uint256[] calldata amounts) external {
        for (uint256 i; i < payees.length; ++i) {
            payable(payees[i]).transfer(amounts[i]);
        }
    }
}
