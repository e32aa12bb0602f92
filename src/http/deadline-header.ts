/** At most ten digits: anything longer is a lie or an attack, and is ignored. */
const MILLISECONDS = /^[0-9]{1,10}$/;

/**
 * The budget a caller propagated in the deadline header, in whole milliseconds; `undefined` for a missing,
 * empty, negative, fractional, exponent, huge or repeated value (Node joins repeated headers with ", ").
 * The caller of this function only ever lets it shorten a budget.
 * @internal
 */
export function parseDeadlineHeader(value: string | string[] | undefined, max: number): number | undefined {
  if (typeof value !== 'string' || !MILLISECONDS.test(value)) return undefined;
  const ms = Number(value);
  return ms <= max ? ms : undefined;
}
