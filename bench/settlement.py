"""``pot bench settlement``: gas per payee of one settle vs a merkle claim vs a naive push loop.

Issue 7 goal: at 100 payees, PotSettlement's gas per payee within 1.25x of the storage floor
(one cold zero-to-nonzero SSTORE, 22,100 gas, plus the payee's own calldata: its address and
amount words at EIP-2028 prices), with the quorum's signature checks amortised.

All three are measured in the same run on the same chain (anvil when installed, else the
in-process EVM), paying the same payees the same amounts:

- ``pot``: one ``settle`` with 3 validator signatures (n=4), pull payments credited.
- ``merkle``: Uniswap merkle-distributor style: one ``setRoot`` plus one ``claim`` tx per
  payee (21,000 base each), ETH sent on claim.
- ``naive``: the seed papers' loop ``payable(p).transfer(a)`` in one transaction.

Payees are existing accounts (1 wei each), as miners who sent transactions are; a push to a
fresh account would add 25,000 gas to the two push schemes. ``pot`` credits are pulled later
by a ``withdraw`` transaction per payee, reported alongside (not in the per-payee figure: the
floor the issue sets is for crediting).
"""

from __future__ import annotations

import time
from typing import Any

from common import report
from eth_abi import abi as eth_abi
from eth_utils import keccak

from pot import keys
from pot.settlement import allocations, contracts, devchain
from pot.settlement import chain as chaining

ETH = 10**18
SSTORE_COLD_SET = 22_100


def _calldata_gas(word: bytes) -> int:
    return sum(16 if b else 4 for b in word)


def _floor(payees: list[str], amounts: list[int]) -> int:
    """Storage floor for crediting everyone: one cold SSTORE plus the payee's calldata."""
    total = 0
    for p, a in zip(payees, amounts, strict=True):
        total += (
            SSTORE_COLD_SET
            + _calldata_gas(bytes(12) + bytes.fromhex(p[2:]))
            + _calldata_gas(a.to_bytes(32, "big"))
        )
    return total


class _Sender:
    """Signs locally with explicit nonces so hundreds of claims go out quickly."""

    def __init__(self, rpc: chaining.Chain, key: keys.Key) -> None:
        self.rpc, self.key = rpc, key
        self.nonce = rpc.w3.eth.get_transaction_count(key.account.address, "pending")

    def send(self, fn: Any, gas: int, value: int = 0) -> bytes:
        max_fee, tip = self.rpc.fees()
        tx = fn.build_transaction(
            {
                "from": self.key.address,
                "nonce": self.nonce,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
                "value": value,
                "chainId": self.rpc.chain_id,
            }
        )
        self.nonce += 1
        return bytes(
            self.rpc.w3.eth.send_raw_transaction(
                self.key.account.sign_transaction(tx).raw_transaction
            )
        )

    def gas_used(self, hashes: list[bytes]) -> int:
        total = 0
        for h in hashes:
            r = self.rpc.w3.eth.wait_for_transaction_receipt(h, timeout=120, poll_latency=0.02)
            if r["status"] != 1:
                raise RuntimeError(f"bench transaction {h.hex()} reverted")
            total += int(r["gasUsed"])
        return total


def _merkle(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Root and proofs with OZ MerkleProof's sorted-pair hashing."""
    layers = [leaves]
    while len(layers[-1]) > 1:
        cur, nxt = layers[-1], []
        for i in range(0, len(cur), 2):
            if i + 1 < len(cur):
                a, b = sorted((cur[i], cur[i + 1]))
                nxt.append(bytes(keccak(a + b)))
            else:
                nxt.append(cur[i])
        layers.append(nxt)
    proofs = []
    for idx in range(len(leaves)):
        proof, i = [], idx
        for layer in layers[:-1]:
            sib = i ^ 1
            if sib < len(layer):
                proof.append(layer[sib])
            i //= 2
        proofs.append(proof)
    return layers[-1][0], proofs


def measure(dev: devchain.DevChain, n: int) -> list[list[Any]]:
    """Rows for n payees: pot, merkle, naive."""
    rpc = chaining.Chain(url=dev.url)
    owner = keys.generate()
    dev.fund(owner.address, 10_000 * ETH)
    sender = _Sender(rpc, owner)
    validators = [keys.generate() for _ in range(4)]
    payee_keys = [keys.generate() for _ in range(n)]
    payees = [k.address for k in payee_keys]
    amounts = [ETH // 1000 + i for i in range(n)]
    for p in payees:  # existing accounts on either chain (pushing to a fresh one costs 25,000 more)
        dev.fund(p, 1)
    floor = _floor(payees, amounts)
    rows: list[list[Any]] = []

    # pot: one settle
    address = contracts.deploy_settlement(rpc, owner, [v.address for v in validators])
    pot = contracts.at(rpc, address)
    alloc = allocations.Allocation(
        task=f"bench/n{n}", round=0, payees=tuple(payees), amounts=tuple(amounts)
    )
    rpc.transact(owner, pot.functions.fundTask(alloc.task_id), abi=pot.abi, value=sum(amounts))
    sender.nonce = rpc.w3.eth.get_transaction_count(owner.account.address, "pending")
    pairs = [(v.address, allocations.sign(v, alloc, rpc.chain_id, address)) for v in validators]
    sigs, _ = allocations.quorum(
        alloc,
        pairs,
        chain_id=rpc.chain_id,
        contract=address,
        registered=[v.address for v in validators],
        threshold=3,
    )
    fn = pot.functions.settle(*alloc.settle_args(sigs, owner.address))
    settle_gas = sender.gas_used(
        [sender.send(fn, gas=int(fn.estimate_gas({"from": owner.address}) * 1.1))]
    )
    dev.fund(payees[0], ETH)  # gas for its withdraw
    w = rpc.transact(payee_keys[0], pot.functions.withdraw(), abi=pot.abi)
    withdraw_gas = int(w["gasUsed"])
    rows.append(["pot settle", n, settle_gas, settle_gas / n, settle_gas / floor, withdraw_gas])

    # merkle: setRoot + a claim per payee
    dist_addr = contracts.deploy(rpc, owner, "MerkleDistributor", value=sum(amounts))
    dist = contracts.at(rpc, dist_addr, "MerkleDistributor")
    sender.nonce = rpc.w3.eth.get_transaction_count(owner.account.address, "pending")
    leaves = [
        bytes(
            keccak(
                eth_abi.encode(["uint256"], [i])[-32:]
                + bytes.fromhex(p[2:])
                + a.to_bytes(32, "big")
            )
        )
        for i, (p, a) in enumerate(zip(payees, amounts, strict=True))
    ]
    root, proofs = _merkle(leaves)
    hashes = [sender.send(dist.functions.setRoot(root), gas=60_000)]
    for i, (p, a) in enumerate(zip(payees, amounts, strict=True)):
        hashes.append(sender.send(dist.functions.claim(i, p, a, proofs[i]), gas=150_000))
    merkle_gas = sender.gas_used(hashes)
    rows.append(["merkle claims", n, merkle_gas, merkle_gas / n, merkle_gas / floor, None])

    # naive: push loop
    naive_addr = contracts.deploy(rpc, owner, "NaiveDistributor", value=sum(amounts))
    naive = contracts.at(rpc, naive_addr, "NaiveDistributor")
    sender.nonce = rpc.w3.eth.get_transaction_count(owner.account.address, "pending")
    fn = naive.functions.distribute(payees, amounts)
    naive_gas = sender.gas_used(
        [sender.send(fn, gas=int(fn.estimate_gas({"from": owner.address}) * 1.1))]
    )
    rows.append(["naive push loop", n, naive_gas, naive_gas / n, naive_gas / floor, None])
    return rows


def main(quick: bool = False) -> dict[str, Any]:
    """Run the bench; quick: 1, 10 and 100 payees."""
    sizes = [1, 10, 100] if quick else [1, 10, 100, 500]
    started = time.monotonic()
    rows: list[list[Any]] = []
    with devchain.running("auto") as dev:
        for n in sizes:
            rows.extend(measure(dev, n))
        kind = dev.kind
    at100 = next(r for r in rows if r[0] == "pot settle" and r[1] == 100)
    return report(
        "settlement",
        ["scheme", "payees", "gas_total", "gas_per_payee", "ratio_to_floor", "withdraw_gas"],
        rows,
        chain=kind,
        goal={
            "payees": 100,
            "max_ratio_to_floor": 1.25,
            "measured": at100[4],
            "met": at100[4] <= 1.25,
        },
        floor="22,100 (cold zero-to-nonzero SSTORE) + the payee's address and amount calldata words",
        seconds=round(time.monotonic() - started, 1),
    )


if __name__ == "__main__":
    main()
