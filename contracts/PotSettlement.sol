// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title PotSettlement: escrow, validator quorum and exactly-once reward settlement for pot.
/// @notice DESIGN §4 steps 4-5 and docs/protocol.md. A submitter escrows a task's pool (ETH or an
/// ERC-20); the ValidatorSet's replicas sign the allocation as EIP-712 typed data; any replica's
/// sidecar submits `settle`, which checks the quorum against the registered set and credits each
/// payee exactly once per (taskId, round). Payees pull their credit with `withdraw` (the seed
/// papers pushed ETH with `transfer` inside the loop: one reverting receiver stalled everyone,
/// and the push invited reentrancy).
/// @dev Every rejection is a named custom error so the sidecar and the tests can tell them apart.
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

contract PotSettlement is EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    // docs/protocol.md "Allocation": the one typed-data definition (pot.settlement.allocations
    // builds the same string off chain).
    bytes32 public constant ALLOCATION_TYPEHASH = keccak256(
        "Allocation(bytes32 taskId,uint256 round,address[] payees,uint256[] amounts,"
        "address[] slashed,uint256[] slashAmounts,bool targetMet,address token)"
    );
    // A rotation is signed by the current set; `epoch` is the current epoch, so a rotation
    // signature can never be replayed after the set changed.
    bytes32 public constant ROTATION_TYPEHASH =
        keccak256("Rotation(uint256 epoch,address[] validators,uint256 threshold)");

    /// @dev One escrow per (task, funder): the funder is part of the key, so nobody can take a
    /// task's slot by funding it first (task ids are guessable: keccak256("ns/name")). The
    /// sidecar names the funder whose escrow pays when it settles. `token == address(0)`: ETH.
    struct Task {
        address funder;
        address token;
        uint256 escrow;
    }

    /// @dev `pending` is on its way out but stays slashable until `unlockAt` (the delay exists
    /// so that a miner cannot withdraw its stake before the validators judge its last segment).
    struct Stake {
        uint256 amount;
        uint256 pending;
        uint256 unlockAt;
    }

    uint256 public immutable withdrawalDelay;
    /// @notice How long a task's escrow must sit untouched (no funding, no settlement) before
    /// its funder may take it back: a task that failed, was deleted or was overfunded would
    /// otherwise lock its escrow forever. Long enough that no live task is ever robbed of it.
    uint256 public constant RECLAIM_AFTER = 90 days;
    uint256 public epoch;
    uint256 public threshold;
    address[] private _validators;
    /// @dev A signer counts iff validatorEpoch[signer] == epoch: rotation needs no deletes.
    mapping(address => uint256) public validatorEpoch;
    mapping(bytes32 => Task) private _escrows;
    mapping(bytes32 => mapping(uint256 => bool)) public settled;
    /// @dev Pull-payment balances per token (address(0) = ETH) and account.
    mapping(address => mapping(address => uint256)) public credits;
    mapping(address => Stake) public stakes;
    /// @dev When each escrow (by `_slot`) last moved (funded or settled): starts RECLAIM_AFTER.
    mapping(bytes32 => uint256) private _lastActivity;
    /// @notice Tasks a quorum settled with `targetMet == false` (the bounty gate failed: the
    /// task is over unpaid). Their funders reclaim what is left at once, not after RECLAIM_AFTER.
    mapping(bytes32 => bool) public targetMissed;
    /// @notice ETH slashed from miners' stakes, in all: burned (it stays in this contract,
    /// credited to nobody). Not paid to a funder: `settle`'s `funder` is not signed, so whoever
    /// submitted a settlement first could have named an escrow of its own (1 wei when the
    /// target was missed) and taken the slashed stake. Burning also leaves the validators, who
    /// decide the slash, nothing to gain from it.
    uint256 public burned;

    event ValidatorSetRotated(uint256 indexed epoch, address[] validators, uint256 threshold);
    event TaskFunded(bytes32 indexed taskId, address indexed funder, address token, uint256 amount, uint256 escrow);
    event Settled(
        bytes32 indexed taskId, uint256 indexed round, uint256 total, uint256 payees, bool targetMet, address submitter
    );
    event Credited(bytes32 indexed taskId, address indexed account, uint256 amount);
    event Refunded(bytes32 indexed taskId, address indexed funder, uint256 amount);
    event Slashed(bytes32 indexed taskId, address indexed account, uint256 requested, uint256 taken);
    event Staked(address indexed account, uint256 amount);
    event UnstakeRequested(address indexed account, uint256 amount, uint256 unlockAt);
    event Unstaked(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    // Rejections, one name each (STYLE: every wire rejection has a name).
    error LengthMismatch();
    error AlreadySettled(bytes32 taskId, uint256 round);
    error InsufficientSignatures(uint256 given, uint256 threshold);
    error InvalidSignature(uint256 index);
    error UnregisteredSigner(address signer);
    error DuplicateSigner(address signer);
    error SignersNotSorted(uint256 index);
    error TaskNotFunded(bytes32 taskId);
    error InsufficientEscrow(bytes32 taskId, uint256 needed, uint256 available);
    error InvalidPayee(uint256 index);
    error ZeroAmount();
    error TokenMismatch(address token);
    error EmptyValidatorSet();
    error InvalidValidator(address validator);
    error InvalidThreshold(uint256 threshold, uint256 validators);
    error InsufficientStake(uint256 requested, uint256 available);
    error NothingToUnstake();
    error StakeLocked(uint256 unlockAt);
    error NothingToWithdraw();
    error TransferFailed(address to);
    error ReclaimLocked(uint256 unlockAt);

    constructor(address[] memory validators_, uint256 threshold_, uint256 withdrawalDelay_)
        EIP712("pot", "1")
    {
        withdrawalDelay = withdrawalDelay_;
        _setValidators(validators_, threshold_);
    }

    // ---------------------------------------------------------------- validator set

    /// @notice The current validator set (epoch `epoch`).
    function validators() external view returns (address[] memory) {
        return _validators;
    }

    /// @notice The EIP-712 domain separator (EIP-712 §domainSeparator), for off-chain checks.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice Replace the validator set; needs a quorum of the *current* set (no owner key).
    function rotateValidators(address[] calldata newValidators, uint256 newThreshold, bytes[] calldata signatures)
        external
    {
        bytes32 structHash =
            keccak256(abi.encode(ROTATION_TYPEHASH, epoch, _hashWords(newValidators), newThreshold));
        _checkQuorum(_hashTypedDataV4(structHash), signatures);
        _setValidators(newValidators, newThreshold);
    }

    function _setValidators(address[] memory vs, uint256 t) private {
        uint256 n = vs.length;
        if (n == 0) revert EmptyValidatorSet();
        // PBFT: n >= 3f+1 tolerates f faults; a quorum of 2f+1 always intersects in a correct replica.
        uint256 f = (n - 1) / 3;
        if (t < 2 * f + 1 || t > n) revert InvalidThreshold(t, n);
        uint256 next = epoch + 1;
        for (uint256 i; i < n; ++i) {
            address v = vs[i];
            if (v == address(0) || validatorEpoch[v] == next) revert InvalidValidator(v);
            validatorEpoch[v] = next;
        }
        epoch = next;
        threshold = t;
        _validators = vs;
        emit ValidatorSetRotated(next, vs, t);
    }

    /// @dev Signers must be registered, unique and ascending, which makes uniqueness an O(1) check
    /// per signature. The count is checked first so a short list costs no ecrecover.
    function _checkQuorum(bytes32 digest, bytes[] calldata signatures) private view {
        uint256 n = signatures.length;
        uint256 t = threshold;
        if (n < t) revert InsufficientSignatures(n, t);
        uint256 ep = epoch;
        address last;
        for (uint256 i; i < n; ++i) {
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signatures[i]);
            if (err != ECDSA.RecoverError.NoError) revert InvalidSignature(i);
            // A signature over another chainId or contract (EIP-712 domain) recovers to an
            // unrelated address, so it lands here.
            if (validatorEpoch[signer] != ep) revert UnregisteredSigner(signer);
            if (signer == last) revert DuplicateSigner(signer);
            if (signer < last) revert SignersNotSorted(i);
            last = signer;
        }
    }

    // ---------------------------------------------------------------- escrow

    /// @notice What `funder` escrowed for a task and has not been paid out or reclaimed.
    function escrowOf(bytes32 taskId, address funder) external view returns (address token, uint256 escrow) {
        Task storage task = _escrows[_slot(taskId, funder)];
        return (task.token, task.escrow);
    }

    /// @notice When `funder`'s escrow for a task last moved (0: never funded).
    function lastActivity(bytes32 taskId, address funder) external view returns (uint256) {
        return _lastActivity[_slot(taskId, funder)];
    }

    function _slot(bytes32 taskId, address funder) private pure returns (bytes32) {
        return keccak256(abi.encode(taskId, funder));
    }

    /// @notice Escrow ETH for a task, as the caller's own escrow (refunds go back to it).
    function fundTask(bytes32 taskId) external payable {
        if (msg.value == 0) revert ZeroAmount();
        Task storage task = _taskFor(taskId, address(0));
        task.escrow += msg.value;
        emit TaskFunded(taskId, msg.sender, address(0), msg.value, task.escrow);
    }

    /// @notice Escrow an ERC-20 for a task (after `approve`). Counts what actually arrived.
    function fundTaskToken(bytes32 taskId, address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (token == address(0)) revert TokenMismatch(token);
        Task storage task = _taskFor(taskId, token);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        task.escrow += received;
        emit TaskFunded(taskId, msg.sender, token, received, task.escrow);
    }

    function _taskFor(bytes32 taskId, address token) private returns (Task storage task) {
        bytes32 slot = _slot(taskId, msg.sender);
        _lastActivity[slot] = block.timestamp;
        task = _escrows[slot];
        if (task.funder == address(0)) {
            task.funder = msg.sender;
            task.token = token;
        } else if (task.token != token) {
            revert TokenMismatch(task.token);
        }
    }

    /// @notice Take back what is left of a task's escrow once it sat untouched for
    /// RECLAIM_AFTER, or at once when the task's target was missed (`targetMissed`): it is
    /// credited to the funder, who withdraws it like any other credit (no transfer here, so
    /// nothing to reenter). A settlement after that finds no escrow and reverts
    /// InsufficientEscrow, paying nobody twice.
    function reclaim(bytes32 taskId) external {
        bytes32 slot = _slot(taskId, msg.sender);
        Task storage task = _escrows[slot];
        address funder = task.funder;
        if (funder == address(0)) revert TaskNotFunded(taskId);
        uint256 unlockAt = _lastActivity[slot] + RECLAIM_AFTER;
        if (block.timestamp < unlockAt && !targetMissed[taskId]) revert ReclaimLocked(unlockAt);
        uint256 amount = task.escrow;
        if (amount == 0) revert NothingToWithdraw();
        task.escrow = 0;
        credits[task.token][funder] += amount;
        emit Refunded(taskId, funder, amount);
    }

    // ---------------------------------------------------------------- settlement

    /// @notice Credit a quorum-signed allocation, exactly once per (taskId, round), from
    /// `funder`'s escrow for the task (the signatures do not cover `funder`: any escrow made
    /// for this task may pay for it, and one that cannot cover it reverts InsufficientEscrow).
    /// Naming a funder gains the submitter nothing: its escrow pays the signed payees, a
    /// missed target refunds it its own escrow's share, and slashed stake is burned.
    /// The signatures do cover `token` (the task's reward.token; zero: ETH), and an escrow in
    /// another token reverts TokenMismatch: anybody may fund a task, so without it a worthless
    /// token's escrow could settle the round and leave the payees with nothing of value.
    /// @dev docs/protocol.md "Allocation". Gas: one SSTORE per payee (a mapping +=), the arrays
    /// hashed straight from calldata, each signature recovered once.
    function settle(
        bytes32 taskId,
        uint256 round,
        address[] calldata payees,
        uint256[] calldata amounts,
        address[] calldata slashed,
        uint256[] calldata slashAmounts,
        bool targetMet,
        bytes[] calldata signatures,
        address funder,
        address token
    ) external {
        if (payees.length != amounts.length || slashed.length != slashAmounts.length) revert LengthMismatch();
        if (settled[taskId][round]) revert AlreadySettled(taskId, round);
        _checkQuorum(_hashTypedDataV4(_allocationHash()), signatures);
        // checks-effects-interactions: marked settled before anything is credited (and settle
        // makes no external call at all).
        settled[taskId][round] = true;
        bytes32 slot = _slot(taskId, funder);
        _lastActivity[slot] = block.timestamp;
        Task storage task = _escrows[slot];
        if (task.funder == address(0)) revert TaskNotFunded(taskId);
        if (task.token != token) revert TokenMismatch(task.token);
        uint256 available = task.escrow;
        mapping(address => uint256) storage balance = credits[task.token];
        uint256 total;
        if (targetMet) {
            for (uint256 i; i < payees.length; ++i) {
                address payee = payees[i];
                if (payee == address(0)) revert InvalidPayee(i);
                uint256 amount = amounts[i];
                total += amount;
                balance[payee] += amount;
                emit Credited(taskId, payee, amount);
            }
        } else {
            // Bounty gate (DESIGN §3 reward.targetMetric): the target was missed, so the pool
            // share this allocation covers goes back to the funder instead of the payees.
            // The validators sign it with no payees at all (docs/protocol.md), so that share is
            // nothing: the task is over, and every funder of it may reclaim its escrow now
            // (it sat locked for RECLAIM_AFTER, 90 days, from this very settlement).
            for (uint256 i; i < amounts.length; ++i) {
                total += amounts[i];
            }
            balance[funder] += total;
            targetMissed[taskId] = true;
            emit Refunded(taskId, funder, total);
        }
        // Checked once after the loop: a failing settle reverts whole, a passing one pays no
        // extra comparison per payee.
        if (total > available) revert InsufficientEscrow(taskId, total, available);
        task.escrow = available - total;
        for (uint256 i; i < slashed.length; ++i) {
            _slash(taskId, slashed[i], slashAmounts[i]);
        }
        emit Settled(taskId, round, total, payees.length, targetMet, msg.sender);
    }

    /// @dev Takes what is there (active stake first, then stake waiting out its delay) and
    /// burns it (`burned`): rejected work was never paid from the pool, so no funder lost it.
    function _slash(bytes32 taskId, address account, uint256 requested) private {
        Stake storage s = stakes[account];
        uint256 fromActive = requested < s.amount ? requested : s.amount;
        uint256 rest = requested - fromActive;
        uint256 fromPending = rest < s.pending ? rest : s.pending;
        s.amount -= fromActive;
        s.pending -= fromPending;
        uint256 taken = fromActive + fromPending;
        burned += taken;
        emit Slashed(taskId, account, requested, taken);
    }

    /// @dev EIP-712 hashStruct(Allocation) read straight from settle's calldata: the ABI head of
    /// settle holds (taskId, round, offsets of the four arrays, targetMet, offset of the
    /// signatures, funder, token), and an ABI-encoded
    /// static array's elements are exactly EIP-712's encodeData of the array (32-byte words).
    /// Reading calldata here keeps settle's stack shallow and copies each array once.
    function _allocationHash() private pure returns (bytes32 h) {
        bytes32 typehash = ALLOCATION_TYPEHASH;
        assembly ("memory-safe") {
            let free := mload(0x40)
            // scratch for the arrays, after the 9-word struct encoding at `free`
            let scratch := add(free, 0x120)
            mstore(free, typehash)
            mstore(add(free, 0x20), calldataload(4)) // taskId
            mstore(add(free, 0x40), calldataload(36)) // round
            for { let k := 0 } lt(k, 4) { k := add(k, 1) } {
                // heads 2..5 hold the offsets of payees, amounts, slashed, slashAmounts
                let start := add(4, calldataload(add(68, mul(k, 0x20))))
                let size := mul(calldataload(start), 0x20)
                calldatacopy(scratch, add(start, 0x20), size)
                mstore(add(free, add(0x60, mul(k, 0x20))), keccak256(scratch, size))
            }
            mstore(add(free, 0xe0), calldataload(196)) // targetMet
            mstore(add(free, 0x100), calldataload(292)) // token (head 9; validated by the ABI decoder)
            h := keccak256(free, 0x120)
        }
    }

    function _hashWords(address[] calldata words) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            let size := mul(words.length, 0x20)
            calldatacopy(ptr, words.offset, size)
            h := keccak256(ptr, size)
        }
    }

    // ---------------------------------------------------------------- stakes

    /// @notice Stake ETH (miners and validators alike).
    function stake() external payable {
        if (msg.value == 0) revert ZeroAmount();
        stakes[msg.sender].amount += msg.value;
        emit Staked(msg.sender, msg.value);
    }

    /// @notice Start the withdrawal delay for `amount`; it stays slashable until it unlocks.
    function requestUnstake(uint256 amount) external {
        Stake storage s = stakes[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > s.amount) revert InsufficientStake(amount, s.amount);
        s.amount -= amount;
        s.pending += amount;
        s.unlockAt = block.timestamp + withdrawalDelay;
        emit UnstakeRequested(msg.sender, amount, s.unlockAt);
    }

    /// @notice After the delay, move the pending stake into the caller's withdrawable ETH credit.
    function completeUnstake() external {
        Stake storage s = stakes[msg.sender];
        uint256 amount = s.pending;
        if (amount == 0) revert NothingToUnstake();
        if (block.timestamp < s.unlockAt) revert StakeLocked(s.unlockAt);
        s.pending = 0;
        credits[address(0)][msg.sender] += amount;
        emit Unstaked(msg.sender, amount);
    }

    // ---------------------------------------------------------------- pull payments

    /// @notice Withdraw the caller's ETH credit.
    /// @dev checks-effects-interactions plus a reentrancy guard: the credit is zeroed before the
    /// call, and a receiver that calls back in gets ReentrancyGuardReentrantCall. A failing
    /// receiver's revert reason is bubbled so the cause stays visible.
    function withdraw() external nonReentrant {
        uint256 amount = credits[address(0)][msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        credits[address(0)][msg.sender] = 0;
        emit Withdrawn(msg.sender, address(0), amount);
        (bool ok, bytes memory reason) = payable(msg.sender).call{value: amount}("");
        if (!ok) {
            if (reason.length > 0) {
                assembly ("memory-safe") {
                    revert(add(reason, 0x20), mload(reason))
                }
            }
            revert TransferFailed(msg.sender);
        }
    }

    /// @notice Withdraw the caller's credit in `token`.
    function withdrawToken(address token) external nonReentrant {
        uint256 amount = credits[token][msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        credits[token][msg.sender] = 0;
        emit Withdrawn(msg.sender, token, amount);
        IERC20(token).safeTransfer(msg.sender, amount);
    }
}
