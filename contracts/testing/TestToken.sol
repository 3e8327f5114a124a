// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestToken: a mintable ERC-20 for the token-escrow tests.
contract TestToken is ERC20 {
    constructor() ERC20("pot test token", "POTT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
