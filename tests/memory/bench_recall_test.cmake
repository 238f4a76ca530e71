# Runs `lal bench recall --json` on 20 generated conversations and checks that lal's recall@10 beats BM25's.
execute_process(COMMAND ${PYTHON} ${GEN} ${WORK}/recall_bench_small.jsonl --conversations 20 --seed 5
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "generating the benchmark failed (${rc})")
endif()
execute_process(COMMAND ${LAL} bench recall --data ${WORK}/recall_bench_small.jsonl --json
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "lal bench recall failed (${rc}): ${out}")
endif()
string(JSON lal10 GET "${out}" all lal r10)
string(JSON bm2510 GET "${out}" all bm25 r10)
string(JSON questions GET "${out}" all lal n)
message(STATUS "recall@10 over ${questions} questions: lal ${lal10}, BM25 ${bm2510}")
if(questions LESS 100 OR NOT lal10 GREATER bm2510)
  message(FATAL_ERROR "lal recall@10 ${lal10} is not above BM25's ${bm2510} (${questions} questions)")
endif()
