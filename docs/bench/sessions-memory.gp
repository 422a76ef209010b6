set terminal pngcairo size 1000,600 font "sans,10"
set output "/work/main/docs/bench/sessions-memory.png"
set datafile missing "?"
set grid
set key outside right top
set title "Memory per session against N (PSS of the stack + kernel growth)"
set xlabel "N (concurrent sessions / connections)"
set ylabel "KiB per session"
set logscale x
stacks = "edge-native haproxy1 haproxy1-busy"
plot for [i=1:words(stacks)] "/work/main/docs/bench/sessions.dat" using 1:(strcol(2) eq word(stacks, i) ? $5 : 1/0) with linespoints lc i title word(stacks, i)." all in", for [i=1:words(stacks)] "/work/main/docs/bench/sessions.dat" using 1:(strcol(2) eq word(stacks, i) ? $6 : 1/0) with linespoints lc i dashtype 2 title word(stacks, i)." marginal"
