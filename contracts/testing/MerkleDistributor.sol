// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title MerkleDistributor: the Uniswap merkle-distributor pattern, minimal, for the bench only.
/// @notice One root per round; each payee claims with a proof in its own transaction, a bitmap
/// records claims. ETH instead of an ERC-20 so the comparison with PotSettlement is like for like.
contract MerkleDistributor {
    bytes32 public root;
    mapping(uint256 => uint256) private claimedBitMap;

    error AlreadyClaimed(uint256 index);
    error InvalidProof();
    error TransferFailed();

    constructor() payable {}

    function setRoot(bytes32 root_) external {
        root = root_;
    }

    function claim(uint256 index, address account, uint256 amount, bytes32[] calldata proof) external {
        uint256 word = index / 256;
        uint256 bit = 1 << (index % 256);
        if (claimedBitMap[word] & bit != 0) revert AlreadyClaimed(index);
        bytes32 leaf = keccak256(abi.encodePacked(index, account, amount));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof();
        claimedBitMap[word] |= bit;
        (bool ok,) = payable(account).call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
