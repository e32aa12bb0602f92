export { CancellationHealthIndicator } from './cancellation-health.indicator.js';
