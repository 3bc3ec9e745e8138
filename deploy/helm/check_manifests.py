"""Check the wiring of a rendered wick chart.

`helm lint` and schema validation accept manifests that are well formed but
wired wrong: a scheduler that dials a worker name no pod has, a Service
whose selector matches no pod, a probe on a port that does not exist. This
script reads the output of `helm template` and checks those links.

Usage: check_manifests.py RENDERED.yaml --namespace NS (--gpu | --cpu)
Exits 1 and lists every failed check.
"""

import argparse
import re
import sys

import yaml

WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def load(path):
    with open(path, encoding="utf-8") as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def flag_values(args, flag):
    prefix = f"--{flag}="
    return [arg[len(prefix):] for arg in args if arg.startswith(prefix)]


def component_of(resource):
    return resource["metadata"]["labels"].get("app.kubernetes.io/component")


class Checker:
    def __init__(self, docs, namespace):
        self.docs = docs
        self.namespace = namespace
        self.failures = []

    def expect(self, condition, message):
        if not condition:
            self.failures.append(message)

    def find_all(self, kind):
        return [doc for doc in self.docs if doc["kind"] == kind]

    def find_one(self, kind, component_name):
        matches = [d for d in self.find_all(kind) if component_of(d) == component_name]
        self.expect(len(matches) == 1, f"expected one {kind} for {component_name}, found {len(matches)}")
        return matches[0] if matches else None

    def check_names(self):
        for doc in self.docs:
            name = doc["metadata"]["name"]
            self.expect(len(name) <= 63, f"{doc['kind']} name {name!r} is longer than 63 characters")
            self.expect(doc["metadata"].get("namespace") == self.namespace,
                        f"{doc['kind']} {name} is not in namespace {self.namespace}")

    def check_workloads(self):
        for workload in (d for d in self.docs if d["kind"] in WORKLOAD_KINDS):
            name = workload["metadata"]["name"]
            template = workload["spec"]["template"]
            selector = workload["spec"]["selector"]["matchLabels"]
            labels = template["metadata"]["labels"]
            self.expect(selector.items() <= labels.items(), f"{name}: selector does not match pod labels")
            pod = template["spec"]
            self.expect(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: pod may run as root")
            self.expect(pod.get("automountServiceAccountToken") is False, f"{name}: mounts an API token")
            for container in pod["containers"]:
                ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe"):
                    self.expect(probe in container, f"{name}/{container['name']}: missing {probe}")
                for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                    self.check_probe_port(name, container, ports, probe_name)

    def check_probe_port(self, name, container, ports, probe_name):
        probe = container.get(probe_name)
        if not probe:
            return
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe:
                port = probe[handler]["port"]
                known = port in ports if isinstance(port, str) else port in ports.values()
                self.expect(known, f"{name}/{container['name']}: {probe_name} port {port} is not a container port")

    def check_services(self):
        templates = [d["spec"]["template"] for d in self.docs if d["kind"] in WORKLOAD_KINDS]
        for service in self.find_all("Service"):
            name = service["metadata"]["name"]
            selector = service["spec"]["selector"]
            pods = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
            self.expect(len(pods) == 1, f"Service {name}: selector matches {len(pods)} workloads, expected 1")
            if not pods:
                continue
            port_names = {p["name"] for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
            for port in service["spec"]["ports"]:
                self.expect(port["targetPort"] in port_names,
                            f"Service {name}: targetPort {port['targetPort']} is not a container port")

    def check_scheduler_wiring(self):
        scheduler = self.find_one("Deployment", "scheduler")
        workers = self.find_one("StatefulSet", "worker")
        gateway = self.find_one("Deployment", "gateway")
        scheduler_service = self.find_one("Service", "scheduler")
        if not (scheduler and workers and gateway and scheduler_service):
            return
        self.expect(scheduler["spec"]["replicas"] == 1, "scheduler must run exactly one replica")
        self.expect(scheduler["spec"]["strategy"]["type"] == "Recreate", "scheduler must use Recreate")

        headless = [s for s in self.find_all("Service") if s["metadata"]["name"] == workers["spec"]["serviceName"]]
        self.expect(len(headless) == 1, f"no Service named {workers['spec']['serviceName']} for the workers")
        if headless:
            self.expect(headless[0]["spec"].get("clusterIP") == "None", "worker Service is not headless")

        worker_port = workers["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        urls = flag_values(scheduler["spec"]["template"]["spec"]["containers"][0]["args"], "worker")
        statefulset_name, service_name = workers["metadata"]["name"], workers["spec"]["serviceName"]
        for index in range(workers["spec"]["replicas"]):
            pattern = (rf"http://{statefulset_name}-{index}\.{service_name}\.{self.namespace}"
                       rf"\.svc(\.[a-z0-9.-]+)?:{worker_port}")
            matching = [u for u in urls if re.fullmatch(pattern, u)]
            self.expect(len(matching) == 1, f"scheduler has no --worker URL for {statefulset_name}-{index}: {urls}")

        scheduler_urls = flag_values(gateway["spec"]["template"]["spec"]["containers"][0]["args"], "scheduler")
        grpc_port = scheduler_service["spec"]["ports"][0]["port"]
        pattern = rf"http://{scheduler_service['metadata']['name']}\.{self.namespace}\.svc(\.[a-z0-9.-]+)?:{grpc_port}"
        self.expect(len(scheduler_urls) == 1 and re.fullmatch(pattern, scheduler_urls[0]),
                    f"gateway --scheduler {scheduler_urls} does not name the scheduler Service")

    def check_gpu(self, gpu):
        workers = self.find_one("StatefulSet", "worker")
        if not workers:
            return
        container = workers["spec"]["template"]["spec"]["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        has_gpu = any(key.endswith("/gpu") for key in limits)
        device = flag_values(container["args"], "device")
        if gpu:
            self.expect(has_gpu, "GPU values: worker requests no GPU")
            self.expect(device and device[0].startswith("cuda"), f"GPU values: worker device is {device}")
            self.expect(container["image"].endswith("-cuda"), f"GPU values: worker image {container['image']} lacks the -cuda tag suffix")
        else:
            self.expect(not has_gpu, "CPU values: worker requests a GPU")
            self.expect(device == ["cpu"], f"CPU values: worker device is {device}")
            self.expect(not container["image"].endswith("-cuda"), f"CPU values: worker image {container['image']} is the CUDA build")

    def check_targets(self):
        deployments = {d["metadata"]["name"] for d in self.find_all("Deployment")}
        for hpa in self.find_all("HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]["name"]
            self.expect(target in deployments, f"HPA targets missing Deployment {target}")
        templates = [d["spec"]["template"]["metadata"]["labels"] for d in self.docs if d["kind"] in WORKLOAD_KINDS]
        for policy in self.find_all("NetworkPolicy"):
            selector = policy["spec"]["podSelector"]["matchLabels"]
            matched = [labels for labels in templates if selector.items() <= labels.items()]
            self.expect(len(matched) == 1,
                        f"NetworkPolicy {policy['metadata']['name']} matches {len(matched)} workloads")
            for rule in policy["spec"]["ingress"]:
                for peer in rule.get("from", []):
                    peer_labels = peer.get("podSelector", {}).get("matchLabels")
                    if peer_labels and "namespaceSelector" not in peer:
                        clients = [labels for labels in templates if peer_labels.items() <= labels.items()]
                        self.expect(clients, f"NetworkPolicy {policy['metadata']['name']} admits no workload")
        for pdb in self.find_all("PodDisruptionBudget"):
            selector = pdb["spec"]["selector"]["matchLabels"]
            matched = [labels for labels in templates if selector.items() <= labels.items()]
            self.expect(len(matched) == 1, f"PDB {pdb['metadata']['name']} matches {len(matched)} workloads")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--namespace", required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpu", action="store_true", help="expect GPU workers")
    mode.add_argument("--cpu", action="store_true", help="expect CPU workers")
    options = parser.parse_args()

    checker = Checker(load(options.rendered), options.namespace)
    checker.check_names()
    checker.check_workloads()
    checker.check_services()
    checker.check_scheduler_wiring()
    checker.check_gpu(options.gpu)
    checker.check_targets()

    for failure in checker.failures:
        print(f"FAIL {options.rendered}: {failure}")
    print(f"{options.rendered}: {len(checker.docs)} resources, {len(checker.failures)} failed checks")
    return 1 if checker.failures else 0


if __name__ == "__main__":
    sys.exit(main())
