// A Node.js app as the OpenTelemetry docs set one up: @opentelemetry/sdk-node exporting traces,
// logs and metrics to one collector.  PROTOCOL is grpc, http/protobuf or http/json; ENDPOINT the
// collector (host:port for gRPC, http://host:port for HTTP).  Every export's result is recorded;
// the app prints them as JSON and exits non-zero when one failed (tests/test_signals_node.py).
'use strict';

const { diag, DiagConsoleLogger, DiagLogLevel, trace, metrics } = require('@opentelemetry/api');
const { logs, SeverityNumber } = require('@opentelemetry/api-logs');
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');

diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.ERROR);

const protocol = process.env.PROTOCOL || 'grpc';
const endpoint = process.env.ENDPOINT;
const packages = {
  'grpc': 'grpc',
  'http/protobuf': 'proto',
  'http/json': 'http',
}[protocol];
if (!packages || !endpoint) {
  console.error('set PROTOCOL (grpc, http/protobuf, http/json) and ENDPOINT');
  process.exit(2);
}

function exporter(signal, className) {
  const Exporter = require(`@opentelemetry/exporter-${signal}-otlp-${packages}`)[className];
  const path = { trace: '/v1/traces', logs: '/v1/logs', metrics: '/v1/metrics' }[signal];
  const url = protocol === 'grpc' ? `http://${endpoint}` : `${endpoint}${path}`;
  return new Exporter({ url });
}

const results = [];
function recording(signal, instance) {
  const original = instance.export.bind(instance);
  instance.export = (items, callback) => original(items, (result) => {
    results.push({ signal, code: result.code, error: result.error ? String(result.error) : null });
    callback(result);
  });
  return instance;
}

const sdk = new NodeSDK({
  serviceName: 'node-signals-app',
  traceExporter: recording('traces', exporter('trace', 'OTLPTraceExporter')),
  logRecordProcessors: [new BatchLogRecordProcessor({ exporter: recording('logs', exporter('logs', 'OTLPLogExporter')) })],
  metricReaders: [new PeriodicExportingMetricReader({
    exporter: recording('metrics', exporter('metrics', 'OTLPMetricExporter')),
    exportIntervalMillis: 3600000,
  })],
  instrumentations: [],
});
sdk.start();

trace.getTracer('node-signals-app').startActiveSpan('chat gpt-4o', (span) => {
  span.setAttribute('gen_ai.operation.name', 'chat');
  logs.getLogger('node-signals-app').emit({
    severityNumber: SeverityNumber.INFO, severityText: 'INFO', body: `hello from node over ${protocol}`,
  });
  const meter = metrics.getMeter('node-signals-app');
  meter.createCounter('app.requests').add(2, { route: '/chat' });
  meter.createHistogram('gen_ai.client.operation.duration', { unit: 's' }).record(0.25);
  span.end();
});

sdk.shutdown().then(() => {
  console.log(JSON.stringify(results));
  const failed = results.filter((r) => r.code !== 0);
  const signals = new Set(results.map((r) => r.signal));
  process.exit(failed.length || signals.size !== 3 ? 1 : 0);
}, (err) => {
  console.error(`shutdown failed: ${err}`);
  console.log(JSON.stringify(results));
  process.exit(1);
});
