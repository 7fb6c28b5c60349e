// Validates custom resources against their CRDs' OpenAPI schemas (KEDA, Prometheus Operator),
// offline: the schemas ship inside the @kubernetes-models packages pinned in package.json.
// Input on stdin: a JSON array of resources. Output: one line per invalid resource; exit 1.
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};
const resources = JSON.parse(readFileSync(0, "utf-8"));
let failed = 0;
for (const resource of resources) {
  const key = `${resource.apiVersion}/${resource.kind}`;
  const Model = models[key];
  if (!Model) {
    console.log(`${key} ${resource.metadata?.name}: no schema known for this kind`);
    failed += 1;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`${key} ${resource.metadata.name}: valid`);
  } catch (error) {
    console.log(`${key} ${resource.metadata?.name}: ${error.message}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);
