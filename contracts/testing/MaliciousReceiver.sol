// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title MaliciousReceiver: a payee that calls back into withdraw() when paid (tests only).
/// @notice The classic reentrancy drain: the seed papers' push payment would have paid it again
/// on every nested call. PotSettlement must refuse the nested call.
interface IPotSettlementWithdraw {
    function withdraw() external;
}

contract MaliciousReceiver {
    IPotSettlementWithdraw public immutable target;
    uint256 public reentries;
    /// @dev When true the nested call's revert is swallowed, so the outer withdraw succeeds
    /// and the test can check that only one payment arrived.
    bool public swallow;
    bytes public lastError;

    constructor(address target_) {
        target = IPotSettlementWithdraw(target_);
    }

    function setSwallow(bool value) external {
        swallow = value;
    }

    function attack() external {
        target.withdraw();
    }

    receive() external payable {
        reentries += 1;
        if (swallow) {
            try target.withdraw() {} catch (bytes memory reason) {
                lastError = reason;
            }
        } else {
            target.withdraw();
        }
    }
}
