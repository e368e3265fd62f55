//go:build !amd64

package sandbox

var probeCalls []probeCall
