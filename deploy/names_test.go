package deploy_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbroker/wxbroker/metrics"
)

// registered describes every metric metrics.New registers: its type and
// labels by name (histogram series names included), found by creating one
// child of every labelled collector through reflection, so a new metric is
// covered without touching this file.
func registered(t *testing.T) map[string]metricInfo {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	touch(reflect.ValueOf(m).Elem())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]metricInfo{}
	for _, mf := range mfs {
		info := metricInfo{typ: strings.ToLower(mf.GetType().String())}
		if len(mf.GetMetric()) > 0 {
			for _, lp := range mf.GetMetric()[0].GetLabel() {
				if lp.GetName() != "le" {
					info.labels = append(info.labels, lp.GetName())
				}
			}
		}
		n := mf.GetName()
		out[n] = info
		if mf.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[n+s] = metricInfo{typ: "series", base: n}
			}
		}
	}
	return out
}

type metricInfo struct {
	typ    string   // counter, gauge, histogram; "series" for a histogram's _bucket/_sum/_count
	labels []string // sorted, as the registry gathers them
	base   string   // the histogram a series belongs to
}

// registeredNames is the set of names registered returns.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for n := range registered(t) {
		names[n] = true
	}
	return names
}

// touch creates one series of every vector collector in v, walking into
// nested structs of collectors (such as metrics.Gateway), so that Gather
// reports every metric with its type and labels.
func touch(v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			touch(f)
			continue
		}
		if f.Kind() != reflect.Pointer || f.IsNil() {
			continue
		}
		get := f.MethodByName("GetMetricWithLabelValues")
		if !get.IsValid() {
			continue
		}
		for n := 0; n <= 8; n++ {
			args := make([]reflect.Value, n)
			for j := range args {
				args[j] = reflect.ValueOf("x")
			}
			if out := get.Call(args); out[1].IsNil() {
				break
			}
		}
	}
}
