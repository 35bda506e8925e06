package deploy_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/wxbroker/wxbroker/config"
)

// The tests in this file keep deploy/ true to the code: the dashboard's
// metrics exist, the sample configurations load and validate, and the
// Kubernetes manifests and the systemd unit agree with the configuration
// they ship with.

const deployDir = "."

// TestDeploy runs the checks of deploy/, one named case per artefact.
func TestDeploy(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"every YAML file parses", testYAMLParses},
		{"grafana dashboard", testGrafanaDashboard},
		{"kubernetes manifests", testKubernetesManifests},
		{"systemd unit", testSystemdUnit},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// testYAMLParses checks that every YAML file under deploy/ parses, every
// document of it.
func testYAMLParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(deployDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml")) {
			return err
		}
		n++
		docs := yamlDocs(t, p)
		if len(docs) == 0 {
			t.Errorf("%s: no YAML document", p)
		}
		for i, doc := range docs {
			if doc.Kind == 0 || (len(doc.Content) == 1 && doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Value == "") {
				t.Errorf("%s: document %d is empty", p, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found %d YAML files under %s; expected the Kubernetes manifests, the sample configs and the alert rules", n, deployDir)
	}
}

// yamlDocs decodes every document of a multi-document YAML file.
func yamlDocs(t *testing.T, p string) []*yaml.Node {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Errorf("%s: document %d: %v", p, len(docs), err)
			return docs
		}
		docs = append(docs, &n)
	}
}

// testGrafanaDashboard checks deploy/grafana/wxbroker-dashboard.json: every
// wxbroker_* series its queries use is registered by metrics.New, every
// metric metrics.New registers is shown, and the data source and the
// namespace and appid variables are there.
func testGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "grafana", "wxbroker-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want 36 or later (data source variables by uid)", dash.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Type
	}
	// namespace is the deployment (the Kubernetes namespace target label),
	// wx_namespace wxbroker's own namespace.
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "namespace": "query", "wx_namespace": "query", "appid": "query"} {
		if vars[name] != typ {
			t.Errorf("template variable %q: type %q, want %q", name, vars[name], typ)
		}
	}

	registered := registeredNames(t)
	metricRef := regexp.MustCompile(`wxbroker_[a-z_]+`)
	used := map[string]bool{}
	check := func(where, expr string) {
		for _, m := range metricRef.FindAllString(expr, -1) {
			used[m] = true
			if !registered[m] {
				t.Errorf("%s uses %s, which metrics.New does not register", where, m)
			}
		}
	}
	for _, v := range dash.Templating.List {
		q, _ := json.Marshal(v.Query)
		check("variable "+v.Name, string(q))
	}
	queries := 0
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: data source %q, want ${datasource}", p.Title, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				if tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q query %s: data source %q, want ${datasource}", p.Title, tg.RefID, tg.Datasource.UID)
				}
				check("panel "+strconv.Quote(p.Title), tg.Expr)
			}
		}
	}
	walk(dash.Panels)
	if queries == 0 {
		t.Fatal("dashboard has no queries")
	}
	// Every metric of docs/METRICS.md has a panel: a new metric needs one too.
	for name := range registered {
		if !strings.HasPrefix(name, "wxbroker_") || strings.HasSuffix(name, "_bucket") ||
			strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") {
			continue
		}
		if !used[name] && !used[name+"_bucket"] && !used[name+"_count"] {
			t.Errorf("metric %s is registered but no dashboard panel shows it", name)
		}
	}
}

type dashDatasource struct {
	UID string `json:"uid"`
}

type dashPanel struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource dashDatasource `json:"datasource"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource dashDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

// k8sObject is the part of a Kubernetes manifest these tests look at.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec       yaml.Node         `yaml:"spec"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
	TopologySpreadConstraints     []any          `yaml:"topologySpreadConstraints"`
	Affinity                      map[string]any `yaml:"affinity"`
	Containers                    []container    `yaml:"containers"`
	Volumes                       []struct {
		Name      string `yaml:"name"`
		Projected struct {
			Sources []struct {
				ConfigMap *volumeSource `yaml:"configMap"`
				Secret    *volumeSource `yaml:"secret"`
			} `yaml:"sources"`
		} `yaml:"projected"`
	} `yaml:"volumes"`
}

type volumeSource struct {
	Name  string `yaml:"name"`
	Items []struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
	} `yaml:"items"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe    *probe `yaml:"startupProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// k8sObjects decodes every manifest of the given files under
// deploy/kubernetes, keyed by kind/name.
func k8sObjects(t *testing.T, files ...string) map[string]*k8sObject {
	t.Helper()
	objs := map[string]*k8sObject{}
	for _, f := range files {
		for _, doc := range yamlDocs(t, filepath.Join(deployDir, "kubernetes", f)) {
			o := &k8sObject{}
			if err := doc.Decode(o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Metadata.Namespace != "" {
				t.Errorf("%s: %s %s names namespace %q; the manifests must stay namespace-agnostic",
					f, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
			}
			objs[o.Kind+"/"+o.Metadata.Name] = o
		}
	}
	return objs
}

func decodeSpec[T any](t *testing.T, o *k8sObject) *T {
	t.Helper()
	v := new(T)
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s %s spec: %v", o.Kind, o.Metadata.Name, err)
	}
	return v
}

// testKubernetesManifests loads the sample config.yaml the way the pod sees
// it (the ConfigMap and the Secret's key files projected into one
// directory, the Secret's values in the environment) and checks that the
// Deployment, the Services and the ServiceMonitor agree with it.
func testKubernetesManifests(t *testing.T) {
	var kust struct {
		Resources          []string `yaml:"resources"`
		ConfigMapGenerator []struct {
			Name  string   `yaml:"name"`
			Files []string `yaml:"files"`
		} `yaml:"configMapGenerator"`
	}
	docs := yamlDocs(t, filepath.Join(deployDir, "kubernetes", "kustomization.yaml"))
	if len(docs) != 1 {
		t.Fatalf("kustomization.yaml: %d documents, want 1", len(docs))
	}
	if err := docs[0].Decode(&kust); err != nil {
		t.Fatal(err)
	}
	for _, r := range kust.Resources {
		if strings.Contains(r, "example") {
			t.Errorf("kustomization.yaml applies %s: examples hold placeholders and must not be applied", r)
		}
	}
	objs := k8sObjects(t, append(slices.Clone(kust.Resources), "secret-example.yaml")...)

	dep, ok := objs["Deployment/wxbroker"]
	if !ok {
		t.Fatal("no Deployment wxbroker in the kustomization's resources")
	}
	var dspec struct {
		Replicas int `yaml:"replicas"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	}
	if err := dep.Spec.Decode(&dspec); err != nil {
		t.Fatal(err)
	}
	pod := dspec.Template.Spec
	if dspec.Replicas < 2 {
		t.Errorf("Deployment: %d replicas; run at least 2 (a standby takes over from a lost leader)", dspec.Replicas)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("Deployment: %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The configuration file: --config names the file the ConfigMap projects.
	cmdline := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
	const configPath = "/etc/wxbroker/config.yaml"
	if !strings.HasSuffix(cmdline, "wxbroker serve --config "+configPath) {
		t.Errorf("Deployment runs %q, want wxbroker serve --config %s", cmdline, configPath)
	}
	mountedConfig := false
	secretFiles := map[string]string{} // path in the config directory -> Secret key
	secretName := ""
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					for _, it := range s.ConfigMap.Items {
						if path.Join(m.MountPath, it.Path) == configPath && it.Key == "config.yaml" &&
							len(kust.ConfigMapGenerator) > 0 && kust.ConfigMapGenerator[0].Name == s.ConfigMap.Name {
							mountedConfig = true
						}
					}
				}
				if s.Secret != nil && m.MountPath == path.Dir(configPath) {
					secretName = s.Secret.Name
					for _, it := range s.Secret.Items {
						secretFiles[it.Path] = it.Key
					}
				}
			}
		}
	}
	if !mountedConfig {
		t.Errorf("Deployment does not mount config.yaml of the generated ConfigMap at %s", configPath)
	}

	// Build the directory the pod sees and the environment it gets.
	dir := t.TempDir()
	sample, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "config.yaml"), sample)
	for p, key := range secretFiles {
		writeFile(t, filepath.Join(dir, p), fakeSecretFile(t, key))
	}
	env := map[string]bool{}
	secret := objs["Secret/"+secretName]
	for _, e := range c.Env {
		env[e.Name] = true
		if ref := e.ValueFrom.SecretKeyRef; ref.Key != "" {
			t.Setenv(e.Name, "dummy-"+e.Name)
			if s := objs["Secret/"+ref.Name]; s == nil {
				t.Errorf("env %s reads Secret %s, which secret-example.yaml does not show", e.Name, ref.Name)
			} else if _, ok := s.StringData[ref.Key]; !ok {
				t.Errorf("env %s reads key %s, which secret-example.yaml does not show", e.Name, ref.Key)
			}
		}
	}
	for _, v := range envRefs(string(sample)) {
		if !env[v] {
			t.Errorf("config.yaml references ${%s}, which the Deployment does not set", v)
		}
	}
	for _, key := range secretFiles {
		if secret == nil {
			t.Errorf("the Deployment mounts Secret %q, which secret-example.yaml does not show", secretName)
		} else if _, ok := secret.StringData[key]; !ok {
			t.Errorf("the Deployment mounts key %s, which secret-example.yaml does not show", key)
		}
	}

	cfg, err := config.Load(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatalf("deploy/kubernetes/config.yaml does not load as the pod sees it: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("deploy/kubernetes/config.yaml: %v", err)
	}

	// Ports: the container's named ports are the config's listeners.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, addr := range map[string]string{"http": cfg.Listen, "login": cfg.PublicListen} {
		if ports[name] == 0 || strconv.Itoa(ports[name]) != portOf(t, addr) {
			t.Errorf("container port %q is %d, but config.yaml listens on %q", name, ports[name], addr)
		}
	}
	if len(ports) != 2 {
		t.Errorf("container ports %v: want exactly http (listen) and login (public_listen)", ports)
	}

	// Probes.
	for _, pr := range []struct {
		name string
		p    *probe
		path string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		t.Run(pr.name, func(t *testing.T) {
			switch {
			case pr.p == nil:
				t.Errorf("container has no %s", pr.name)
			case pr.p.HTTPGet.Path != pr.path || pr.p.HTTPGet.Port != "http":
				t.Errorf("%s: GET %s on port %q, want %s on port http (the internal listener)",
					pr.name, pr.p.HTTPGet.Path, pr.p.HTTPGet.Port, pr.path)
			}
		})
	}

	// Hardening and sizing.
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod securityContext: runAsNonRoot is not true")
	}
	if pod.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod seccompProfile %q, want RuntimeDefault", pod.SecurityContext.SeccompProfile.Type)
	}
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container securityContext: readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container securityContext: allowPrivilegeEscalation is not false")
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container capabilities drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("container has no %s request", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("container has no memory limit")
	}
	if len(pod.TopologySpreadConstraints) == 0 && pod.Affinity["podAntiAffinity"] == nil {
		t.Error("pod has neither topologySpreadConstraints nor podAntiAffinity: replicas may share a node")
	}
	// Drain (10 s) + refreshes in flight (wechat.timeout) + lock release (1 s).
	if minGrace := 10 + int(cfg.WeChat.Timeout.Seconds()) + 1; pod.TerminationGracePeriodSeconds < minGrace {
		t.Errorf("terminationGracePeriodSeconds %d: shutdown may need %d s", pod.TerminationGracePeriodSeconds, minGrace)
	}

	// Services point at the container's ports; the ServiceMonitor at a Service port.
	servicePorts := map[string]bool{}
	services := 0
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		services++
		spec := decodeSpec[struct {
			Type  string `yaml:"type"`
			Ports []struct {
				Name       string `yaml:"name"`
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		}](t, o)
		for _, p := range spec.Ports {
			if _, ok := ports[p.TargetPort]; !ok {
				t.Errorf("Service %s port %s targets %q, which is no container port", o.Metadata.Name, p.Name, p.TargetPort)
			}
			servicePorts[p.Name] = true
		}
	}
	if services < 2 {
		t.Errorf("%d Services; want one for the internal API and one for login", services)
	}
	sm, ok := objs["ServiceMonitor/wxbroker"]
	if !ok {
		t.Fatal("no ServiceMonitor wxbroker in the kustomization's resources")
	}
	smSpec := decodeSpec[struct {
		Endpoints []struct {
			Port        string           `yaml:"port"`
			Path        string           `yaml:"path"`
			Relabelings []map[string]any `yaml:"relabelings"`
		} `yaml:"endpoints"`
	}](t, sm)
	for _, ep := range smSpec.Endpoints {
		if len(ep.Relabelings) > 0 {
			t.Errorf("ServiceMonitor relabels %v: wxbroker's label is wx_namespace, the Kubernetes namespace label must stay as it is", ep.Relabelings)
		}
	}
	// kube-prometheus-stack selects ServiceMonitors and PrometheusRules by
	// its Helm release label (docs/OPERATIONS.md, Monitoring).
	for _, key := range []string{"ServiceMonitor/wxbroker", "PrometheusRule/wxbroker"} {
		o, ok := objs[key]
		if !ok {
			t.Errorf("no %s in the kustomization's resources", key)
			continue
		}
		if o.Metadata.Labels["release"] == "" {
			t.Errorf("%s has no release label (kube-prometheus-stack's default selector)", key)
		}
	}
	if len(smSpec.Endpoints) != 1 || !servicePorts[smSpec.Endpoints[0].Port] || ports[smSpec.Endpoints[0].Port] != ports["http"] ||
		smSpec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want /metrics on the Service port of the internal listener", smSpec.Endpoints)
	}
	if _, ok := objs["PodDisruptionBudget/wxbroker"]; !ok {
		t.Error("no PodDisruptionBudget wxbroker in the kustomization's resources")
	}
}

// testSystemdUnit loads deploy/systemd/config.yaml the way the unit runs it
// (credentials in $CREDENTIALS_DIRECTORY, the environment file's variables
// set) and checks the unit's command line and credentials against it.
func testSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(deployDir, "systemd", "wxbroker.service"))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("wxbroker.service: line %q is not key=value", line)
			continue
		}
		settings[k] = append(settings[k], v)
	}
	const configPath = "/etc/wxbroker/config.yaml"
	if got := settings["ExecStart"]; len(got) != 1 || got[0] != "/usr/local/bin/wxbroker serve --config "+configPath {
		t.Errorf("ExecStart %q, want /usr/local/bin/wxbroker serve --config %s", got, configPath)
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"CapabilityBoundingSet": "", "Restart": "on-failure", "KillSignal": "SIGTERM",
	} {
		if got := settings[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}

	creds := t.TempDir()
	loaded := map[string]bool{}
	for _, lc := range settings["LoadCredential"] {
		name, _, _ := strings.Cut(lc, ":")
		loaded[name] = true
		writeFile(t, filepath.Join(creds, name), fakeSecretFile(t, name))
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	sample, err := os.ReadFile(filepath.Join(deployDir, "systemd", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range envRefs(string(sample)) {
		if v != "CREDENTIALS_DIRECTORY" {
			t.Setenv(v, "dummy-"+v)
		}
	}
	credRef := regexp.MustCompile(`\$\{CREDENTIALS_DIRECTORY(?::\?)?\}/([A-Za-z0-9._-]+)`)
	for _, m := range credRef.FindAllStringSubmatch(string(sample), -1) {
		if !loaded[m[1]] {
			t.Errorf("config.yaml reads credential %s, which the unit does not load (LoadCredential=)", m[1])
		}
	}
	cfg, err := config.Load(filepath.Join(deployDir, "systemd", "config.yaml"))
	if err != nil {
		t.Fatalf("deploy/systemd/config.yaml does not load as the unit runs it: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("deploy/systemd/config.yaml: %v", err)
	}
}

// envRefs returns the variables a configuration references as ${VAR},
// ${VAR:?} or ${VAR:-default}, sorted and without duplicates.
func envRefs(s string) []string {
	re := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`)
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		for _, m := range re.FindAllStringSubmatch(strings.ReplaceAll(line, "$$", ""), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
	}
	sort.Strings(out)
	return out
}

// fakeSecretFile generates a valid stand-in for a secret file by its name:
// the Ed25519 signing key or the AES key the login section needs.
func fakeSecretFile(t *testing.T, name string) []byte {
	t.Helper()
	switch {
	case strings.HasSuffix(name, ".pem"):
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	case name == "aes.key":
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		return []byte(base64.StdEncoding.EncodeToString(key) + "\n")
	default:
		t.Fatalf("no stand-in for secret file %q: teach fakeSecretFile what it holds", name)
		return nil
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}
