// The worker of the worker-thread recipe in docs/recipes.md (test/readme/real-work.ts): plain JavaScript, so
// that the worker thread loads it as it is (Jest's transform does not reach into worker threads).

// #region worker
// primes.worker.mjs: runs in a worker thread. No checkpoint() needed: piscina stops a cancelled task by
// terminating its thread.
export default function countPrimes({ limit }) {
  let count = 0;
  for (let n = 2; n < limit; n++) {
    let prime = true;
    for (let d = 2; d * d <= n; d++) {
      if (n % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) count++;
  }
  return count;
}
// #endregion worker
