# Use ccache for C++ and CUDA when it is installed (rebuilds after a branch switch are cheap).
find_program(NNOPS_CCACHE ccache)
if(NNOPS_CCACHE)
  foreach(lang CXX CUDA)
    if(NOT DEFINED CMAKE_${lang}_COMPILER_LAUNCHER)
      set(CMAKE_${lang}_COMPILER_LAUNCHER "${NNOPS_CCACHE}")
    endif()
  endforeach()
endif()
