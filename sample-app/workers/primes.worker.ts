// Runs in a piscina worker thread. Plain CPU work, with no checkpoint(): a cancelled task is stopped by
// terminating its thread, and the event loop of the application stays free to notice hang-ups and SIGTERM.

function isPrime(n: number): boolean {
  if (n < 4) return n > 1;
  if (n % 2 === 0) return false;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

export default function countPrimes({ limit }: { limit: number }): number {
  let count = 0;
  for (let n = 2; n <= limit; n++) if (isPrime(n)) count++;
  return count;
}
