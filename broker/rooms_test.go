package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	gotoken "go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// maxMethods is the most methods a named type of any package under broker/
// may have: its method set through a pointer, so value and pointer
// receivers, exported and unexported, own and promoted from embedded types
// alike (a room with one door, not a building: docs/ARCHITECTURE.md).
const maxMethods = 25

// TestMethodCount type-checks the production files of every package under
// broker/ (this one, broker/api, broker/login and any package added later)
// against the export data of their imports, and keeps every named type at
// maxMethods or fewer. Its failure names the type, its count and the files
// that declare the methods.
func TestMethodCount(t *testing.T) {
	pkgs, err := methodCounts("./...")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, p := range pkgs {
		found[p.path] = true
	}
	for _, want := range []string{"broker", "broker/api", "broker/login"} {
		if !found[want] {
			t.Fatalf("package %s not type-checked (found %v): the counter is broken", want, found)
		}
	}
	if n := countOf(pkgs, "broker", "Broker"); n == 0 {
		t.Fatal("no methods found on broker.Broker: the counter is broken")
	}
	for _, p := range pkgs {
		sort.Slice(p.types, func(i, j int) bool {
			if p.types[i].methods != p.types[j].methods {
				return p.types[i].methods > p.types[j].methods
			}
			return p.types[i].name < p.types[j].name
		})
		var top []string
		for _, tc := range p.types[:min(4, len(p.types))] {
			top = append(top, tc.name+"="+itoa(tc.methods))
		}
		t.Logf("%s: largest types %s", p.path, strings.Join(top, ", "))
		for _, tc := range p.types {
			if tc.methods > maxMethods {
				t.Errorf("type %s.%s has %d methods (%s); split it: at most %d",
					p.name, tc.name, tc.methods, tc.filesText(), maxMethods)
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// pkgCount is the method count of every named type of one package.
type pkgCount struct {
	path  string // relative to the module, e.g. "broker/api"
	name  string // the package name
	types []typeCount
}

// typeCount is one named type: its method count and, per file, how many of
// its methods that file declares.
type typeCount struct {
	name    string
	methods int
	files   map[string]int
}

func (tc typeCount) filesText() string {
	names := make([]string, 0, len(tc.files))
	for f := range tc.files {
		names = append(names, f)
	}
	sort.Slice(names, func(i, j int) bool {
		if tc.files[names[i]] != tc.files[names[j]] {
			return tc.files[names[i]] > tc.files[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + itoa(tc.files[n])
	}
	return strings.Join(parts, ", ")
}

func countOf(pkgs []pkgCount, path, typ string) int {
	for _, p := range pkgs {
		if p.path != path {
			continue
		}
		for _, tc := range p.types {
			if tc.name == typ {
				return tc.methods
			}
		}
	}
	return 0
}

// listedPackage is what methodCounts reads of `go list -json`.
type listedPackage struct {
	ImportPath string
	Dir        string
	Name       string
	Export     string
	GoFiles    []string
	Module     *struct{ Path string }
	DepOnly    bool
}

// methodCounts type-checks the packages matching pattern (relative to the
// test's directory) with the export data `go list -export` gives for their
// imports, and counts the method set of every named type they declare.
func methodCounts(pattern string) ([]pkgCount, error) {
	// go test puts its own GOROOT/bin first on the test's PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go command: %w", err)
	}
	cmd := exec.Command(goBin, "list", "-export", "-deps",
		"-json=ImportPath,Dir,Name,Export,GoFiles,Module,DepOnly", pattern)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.String())
	}
	exports := map[string]string{}
	var targets []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list: %w", err)
		}
		exports[p.ImportPath] = p.Export
		if !p.DepOnly {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return nil, errors.New("go list matched no package")
	}
	fset := gotoken.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, errors.New("no export data for " + path)
		}
		return os.Open(f)
	})
	var res []pkgCount
	for _, p := range targets {
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, 0)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
		conf := types.Config{Importer: imp}
		pkg, err := conf.Check(p.ImportPath, fset, files, nil)
		if err != nil {
			return nil, fmt.Errorf("type-check %s: %w", p.ImportPath, err)
		}
		rel := p.ImportPath
		if p.Module != nil {
			rel = strings.TrimPrefix(strings.TrimPrefix(rel, p.Module.Path), "/")
		}
		pc := pkgCount{path: rel, name: p.Name}
		for _, n := range pkg.Scope().Names() {
			tn, ok := pkg.Scope().Lookup(n).(*types.TypeName)
			if !ok || tn.IsAlias() {
				continue
			}
			tc := typeCount{name: n, files: map[string]int{}}
			if it, ok := tn.Type().Underlying().(*types.Interface); ok {
				tc.methods = it.NumMethods()
				for i := range it.NumMethods() {
					tc.files[filepath.Base(fset.Position(it.Method(i).Pos()).Filename)]++
				}
			} else {
				ms := types.NewMethodSet(types.NewPointer(tn.Type()))
				tc.methods = ms.Len()
				for i := range ms.Len() {
					obj := ms.At(i).Obj()
					file := "promoted from " + obj.Pkg().Path()
					if obj.Pkg() == pkg {
						file = filepath.Base(fset.Position(obj.Pos()).Filename)
					}
					tc.files[file]++
				}
			}
			pc.types = append(pc.types, tc)
		}
		res = append(res, pc)
	}
	return res, nil
}

// roomOrder is the order of the rooms of package broker, lowest first
// (docs/ARCHITECTURE.md, rooms of package broker). A file may refer to what
// its own room and the rooms below it declare, never to what a room above
// declares: where a lower room must tell a higher one, it declares a
// function or a small interface and the higher room (or New) fills it in.
var roomOrder = []struct {
	room  string
	files []string
}{
	{"store", []string{"store.go", "store_scripts.go"}},
	{"catalog", []string{"doc.go", "kinds.go", "catalog.go", "log.go"}},
	{"core", []string{"core.go", "cluster.go", "metrics.go"}},
	{"replica", []string{"cache.go", "subscribe.go", "reconcile.go", "pause.go", "issued.go"}},
	{"lease", []string{"election.go", "epoch.go", "lostlease.go"}},
	{"leader", []string{"fence.go", "intent.go", "quota.go", "verify.go", "refresh.go", "scheduler.go", "repair.go", "invalidate.go"}},
	{"front", []string{"report.go", "status.go", "reload.go", "broker.go"}},
}

// TestRoomOrder type-checks the production files of the package and fails
// when a file refers to a type, function, method, field, variable or
// constant declared in a file of a higher room (the same room is fine).
func TestRoomOrder(t *testing.T) {
	rank := map[string]int{}
	for i, r := range roomOrder {
		for _, f := range r.files {
			rank[f] = i
		}
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := gotoken.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		if _, ok := rank[name]; !ok {
			t.Errorf("%s is in no room: add it to roomOrder (and to docs/ARCHITECTURE.md)", name)
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// Only the standard library is imported (atomic.Pointer[T] and the like
	// must resolve their T); other imports fail, which leaves what the
	// package declares resolved, all this test looks at.
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	conf := types.Config{Importer: stdImports{importer.Default()}, Error: func(error) {}}
	pkg, _ := conf.Check("github.com/wxbroker/wxbroker/broker", fset, files, info)
	if pkg == nil {
		t.Fatal("type check produced no package")
	}
	fileOf := func(p gotoken.Pos) string { return filepath.Base(fset.Position(p).Filename) }
	type edge struct{ from, to string }
	back := map[edge][]string{}
	uses := 0
	for id, obj := range info.Uses {
		if obj.Pkg() != pkg || !obj.Pos().IsValid() {
			continue
		}
		switch o := obj.(type) {
		case *types.Var:
			if !o.IsField() && o.Parent() != pkg.Scope() {
				continue // a local variable or parameter
			}
		case *types.Func:
			// package functions and methods
		case *types.TypeName, *types.Const:
			if o.Parent() != pkg.Scope() {
				continue // declared inside a function
			}
		default:
			continue
		}
		from, to := fileOf(id.Pos()), fileOf(obj.Pos())
		if from == to {
			continue
		}
		uses++
		if rank[to] > rank[from] {
			e := edge{from, to}
			back[e] = append(back[e], obj.Name())
		}
	}
	if uses < 500 {
		t.Fatalf("only %d references between files found: the checker is broken", uses)
	}
	edges := make([]edge, 0, len(back))
	for e := range back {
		edges = append(edges, e)
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].from != edges[j].from {
			return edges[i].from < edges[j].from
		}
		return edges[i].to < edges[j].to
	})
	for _, e := range edges {
		names := dedupe(back[e])
		t.Errorf("%s (room %s) refers to %s (room %s, higher): %s",
			e.from, roomOrder[rank[e.from]].room, e.to, roomOrder[rank[e.to]].room, strings.Join(names, ", "))
	}
	t.Logf("%d references between files, %d back-edges", uses, len(edges))
}

// stdImports resolves the standard library only: the room test needs the
// package's own declarations, not those of its modules.
type stdImports struct{ std types.Importer }

func (s stdImports) Import(path string) (*types.Package, error) {
	if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
		return nil, errors.New("not resolved: " + path)
	}
	return s.std.Import(path)
}

func dedupe(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
